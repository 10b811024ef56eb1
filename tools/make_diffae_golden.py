"""Golden outputs of the OFFICIAL Diffusion Autoencoder code, for tests/test_diffae_official.py.

Runs the official code (github.com/phizaz/diffae, MIT licence; not part of captum_cfx and not needed by the tests)
once at a tiny width with random non-zero weights for every parameter, and writes

- ``tests/data/diffae_tiny_golden.safetensors``: the official ``ema_model.*`` state dict (official names),
  the classifier checkpoint's state dict (``cls.*``), inputs and the official outputs: semantic code, noise
  predictions at three ``(x_t, t)``, a 10-step DDIM render, a 10-step stochastic encoding, classifier logits;
- ``tests/data/diffae_golden.json``: the tiny template and the parameter counts of the official model at every
  released template (built on the meta device).

Usage (the official repository checked out at OFFICIAL; only torch and numpy are needed, the repository's
data-set / Lightning imports are stubbed)::

    python tools/make_diffae_golden.py /path/to/phizaz/diffae
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ("celeba64d2c_autoenc", "ffhq128_autoenc_130M", "ffhq128_autoenc_72M", "horse128_autoenc",
             "bedroom128_autoenc", "ffhq256_autoenc")
#: official TrainConfig fields of the tiny model (32x32, two levels, two attention heads)
TINY = {"img_size": 32, "net_ch": 32, "net_ch_mult": [1, 1], "net_enc_channel_mult": [1, 1], "net_attn": [16],
        "net_beatgans_attn_head": 2, "net_beatgans_embed_channels": 32, "style_ch": 32,
        "net_beatgans_resnet_two_cond": True, "net_num_res_blocks": 1, "net_enc_num_res_blocks": 1, "T": 1000,
        "T_eval": 10, "beta_scheduler": "linear"}
#: an even smaller official model (8x8) on which the test suite runs every method
METHODS = {"img_size": 8, "net_ch": 8, "net_ch_mult": [1, 2], "net_enc_channel_mult": [1, 2], "net_attn": [4],
           "net_beatgans_attn_head": 1, "net_beatgans_embed_channels": 8, "style_ch": 8,
           "net_beatgans_resnet_two_cond": True, "net_num_res_blocks": 1, "net_enc_num_res_blocks": 1, "T": 1000,
           "T_eval": 2, "beta_scheduler": "linear"}


def import_official(path: str):
    sys.path.insert(0, path)
    for name in ("dataset", "dataset_util", "dist_utils", "lmdb_writer"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["dataset"].CelebAttrDataset = type("CelebAttrDataset", (), {"id_to_cls": [f"a{i}" for i in range(40)]})
    pl = types.ModuleType("pytorch_lightning")
    pl.LightningModule = type("LightningModule", (torch.nn.Module,), {"save_hyperparameters": lambda self, *a: None,
                                                              "device": torch.device("cpu")})
    pl.seed_everything = lambda seed: None
    sys.modules["pytorch_lightning"] = pl
    for sub in ("loggers", "callbacks"):
        sys.modules[f"pytorch_lightning.{sub}"] = types.ModuleType(f"pytorch_lightning.{sub}")
        setattr(pl, sub, sys.modules[f"pytorch_lightning.{sub}"])
    import config

    sys.modules["experiment"] = config
    import experiment_classifier
    import renderer
    import templates

    return config, templates, renderer, experiment_classifier


def randomize(model: torch.nn.Module, g: torch.Generator) -> None:
    """Every parameter random and non-zero (the official init zeroes several output convs)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if p.dim() > 1:
                p.copy_(r / math.sqrt(p[0].numel()))
            elif name.endswith("weight"):  # the only 1-D weights are GroupNorm scales
                p.copy_(1 + 0.2 * r)
            else:
                p.copy_(0.1 * r)


def official_model(config, fields: dict):
    conf = config.TrainConfig()
    for k, v in fields.items():
        setattr(conf, k, tuple(v) if isinstance(v, list) else v)
    conf.model_name = config.ModelName.beatgans_autoenc
    conf.diffusion_type = "beatgans"
    conf.beatgans_gen_type = config.GenerativeType.ddim
    return conf, conf.make_model_conf().make_model().eval()


def main(official: str) -> None:
    config, templates, renderer, experiment_classifier = import_official(official)
    from diffusion.diffusion import space_timesteps
    counts = {}
    for name in TEMPLATES:
        with torch.device("meta"):
            m = getattr(templates, name)().make_model_conf().make_model()
        counts[name] = sum(p.numel() for p in m.parameters())

    torch.manual_seed(0)
    conf, model = official_model(config, TINY)
    g = torch.Generator().manual_seed(0)
    randomize(model, g)
    sampler = conf._make_diffusion_conf(T=conf.T_eval).make_sampler()

    n = 2
    out = {f"ema_model.{k}": v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(n, 3, 32, 32, generator=g) * 2 - 1
    x_t = torch.randn(3, n, 3, 32, 32, generator=g)
    ts = torch.tensor([0, 137, 999])
    x_T = torch.randn(n, 3, 32, 32, generator=g)
    with torch.no_grad():
        cond = model.encoder.forward(x)  # LitModel.encode
        eps = torch.stack([model.forward(x=x_t[i], t=ts[i].repeat(n), cond=cond).pred for i in range(3)])
        render = renderer.render_condition(conf, model, x_T, sampler=sampler, cond=cond)  # LitModel.render
        # LitModel.encode_stochastic
        enc = sampler.ddim_reverse_sample_loop(model, x, model_kwargs={"cond": cond})["sample"]

    # the attribute classifier (ClsModel with z-normalisation), its checkpoint state dict and logits
    cls_conf = config.TrainConfig()
    for k, v in TINY.items():
        setattr(cls_conf, k, tuple(v) if isinstance(v, list) else v)
    cls_conf.model_name = config.ModelName.beatgans_autoenc
    cls_conf.train_mode = config.TrainMode.manipulate
    cls_conf.manipulate_mode = config.ManipulateMode.celebahq_all
    cls_conf.manipulate_znormalize = True
    with tempfile.TemporaryDirectory() as tmp:
        stats = {"conds": None, "conds_mean": torch.randn(32, generator=g),
                 "conds_std": torch.rand(32, generator=g) + 0.5}
        torch.save(stats, f"{tmp}/latent.pkl")
        cls_conf.latent_infer_path = f"{tmp}/latent.pkl"
        cls = experiment_classifier.ClsModel(cls_conf)
    randomize(cls.classifier, g)
    randomize(cls.ema_classifier, g)
    z = torch.randn(5, 32, generator=g) * 2
    with torch.no_grad():
        logits = cls.classifier(cls.normalize(z))
        logits_ema = cls.ema_classifier(cls.normalize(z))
    out.update({f"cls.{k}": v.clone() for k, v in cls.state_dict().items()})
    _, small = official_model(config, METHODS)
    randomize(small, g)
    out.update({f"methods.ema_model.{k}": v.clone() for k, v in small.state_dict().items()})
    out.update({"golden.x": x, "golden.cond": cond, "golden.x_t": x_t, "golden.t": ts, "golden.eps": eps,
                "golden.x_T": x_T, "golden.render": render, "golden.encode_stochastic": enc, "golden.z": z,
                "golden.logits": logits, "golden.logits_ema": logits_ema})
    save_file({k: v.contiguous() for k, v in out.items()}, str(ROOT / "tests/data/diffae_tiny_golden.safetensors"))
    (ROOT / "tests/data/diffae_golden.json").write_text(json.dumps(
        {"source": "github.com/phizaz/diffae (official code, run by tools/make_diffae_golden.py)",
         "tiny_template": TINY, "methods_template": METHODS, "official_parameter_counts": counts}, indent=2) + "\n")
    spacing, refused = {}, []
    for k in (1, 3, 7, 10, 20, 50, 100, 250, 999):
        try:
            spacing[str(k)] = sorted(space_timesteps(1000, f"ddim{k}"))
        except ValueError:
            refused.append(k)
    meta = json.loads((ROOT / "tests/data/diffae_golden.json").read_text())
    meta["official_ddim_timesteps"], meta["official_ddim_refused"] = spacing, refused
    (ROOT / "tests/data/diffae_golden.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(counts, indent=2))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python tools/make_diffae_golden.py /path/to/phizaz/diffae")
    main(sys.argv[1])
