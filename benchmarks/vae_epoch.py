"""One VAE training epoch including the data pipeline: the zoo vs the Pyro-examples style.

Zoo: ``pyro_zoo.inference.train.fit(vae, x, epochs=1, batch_size=128)`` where ``x`` is the zoo's MNIST
tensor (read once from the IDX files by ``pyro_zoo.models.data``); minibatches are index slices of a
per-epoch permutation of that tensor, binarised by the model. Timed end to end (the input
check included).

Peer, as in Pyro's VAE example and ``pyro.contrib.examples.util.get_data_loader``:
``torchvision.datasets.MNIST(root, transform=ToTensor())`` + ``DataLoader(batch_size=128,
shuffle=True, num_workers=--workers)``, every image turned into a PIL image and back into a
tensor per item, batches collated by the loader; the same 784-400-50 network as a Pyro
model/guide with ``pyro.module``, trained by ``SVI(model, guide, pyro.optim.Adam, Trace_ELBO())``
with ``svi.step`` on ``x.reshape(-1, 784)`` binarised like the zoo's. Whole epochs, A B A B.
Target: zoo >= 3x faster. The one-off loading of the data set and the data pipeline alone (an
epoch of batches with no training) are measured once for both and reported as notes.

    python -m benchmarks.vae_epoch [--smoke] [--device cpu|cuda] [--workers W] [--repeats R]
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO

from benchmarks.common import Report, Row, image_root, interleaved, median, parser, run_main, timed
from benchmarks.vae_step import BATCH, MIN_SCALE, PlainVAE
from pyro_zoo.inference.train import evaluate_objective, fit_model
from pyro_zoo.models import get_spec
from pyro_zoo.models.base import DATA_PLATE

NAME = "vae_epoch"
TARGET = 1 / 3
SMOKE_IMAGES = 1024


class PyroExampleVAE(PlainVAE):
    """The same network as a Pyro model/guide pair in the style of Pyro's VAE example."""

    def model(self, x: torch.Tensor):
        pyro.module("decoder_hidden", self.decoder_hidden)
        pyro.module("decoder_out", self.decoder_out)
        z_dim = self.loc_head.out_features
        with pyro.plate(DATA_PLATE, x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(z_dim), x.new_ones(z_dim)).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decode(z)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor):
        for name in ("encoder", "loc_head", "scale_head"):
            pyro.module(name, getattr(self, name))
        h = torch.nn.functional.softplus(self.encoder(x))
        scale = torch.nn.functional.softplus(self.scale_head(h)) + MIN_SCALE
        with pyro.plate(DATA_PLATE, x.shape[0]):
            pyro.sample("z", dist.Normal(self.loc_head(h), scale).to_event(1))


def torchvision_loader(root, count: int | None, workers: int, device: torch.device):
    """The Pyro-examples data pipeline over MNIST train (the first ``count`` images if given)."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    dataset = datasets.MNIST(root=str(root), train=True, transform=transforms.ToTensor(), download=False)
    if count is not None:
        dataset = Subset(dataset, range(count))
    return DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers,
                      pin_memory=device.type == "cuda")


def peer_epoch(svi: SVI, loader, device: torch.device, limit: int | None = None) -> float:
    total = 0.0
    for index, (x, _) in enumerate(loader):
        if limit is not None and index == limit:
            break
        x = x.to(device).reshape(-1, 784)
        total += svi.step(torch.bernoulli(x))
    return total


def benchmark(args, device: torch.device) -> Report:
    spec = get_spec("vae")
    lr = spec.train["lr"]
    count = SMOKE_IMAGES if args.smoke else None
    import torchvision.datasets  # noqa: F401 - imported before the load timings, for both

    with image_root(args) as (root, source):
        zoo_load = timed(lambda: spec.load_data("train", data_dir=root, data="mnist"), device)
        x = spec.load_data("train", data_dir=root, data="mnist").x[:count].to(device)
        test = spec.load_data("test", data_dir=root, data="mnist").x[:2000].to(device)
        peer_load = timed(lambda: torchvision_loader(root, count, args.workers, device), device)
        loader = torchvision_loader(root, count, args.workers, device)
        pipeline = {"zoo": timed(lambda: _zoo_batches(x), device),
                    "peer": timed(lambda: [b for b, _ in loader], device)}

        pyro.set_rng_seed(args.seed)
        zoo_model = spec.make(data_dim=784).to(device)
        peer_model = PyroExampleVAE().to(device)
        pyro.clear_param_store()
        svi = SVI(peer_model.model, peer_model.guide, pyro.optim.Adam({"lr": lr}), Trace_ELBO())

        def zoo():
            return fit_model(zoo_model, x, fast=True, epochs=1, batch_size=BATCH, lr=lr, progress=False)

        def peer():
            return peer_epoch(svi, loader, device)

        # warm-up: a few steps of each, then whole epochs A B A B
        fit_model(zoo_model, x, fast=True, steps=3, batch_size=BATCH, lr=lr, progress=False)
        peer_epoch(svi, loader, device, limit=3)
        zoo_times, peer_times = interleaved(zoo, peer, device=device, repeats=args.repeats, warmup=0)

    with torch.no_grad():
        zoo_loss = evaluate_objective(zoo_model.model, zoo_model.guide, test, "TraceMeanField_ELBO")
        peer_loss = float(sum(Trace_ELBO().loss(peer_model.model, peer_model.guide, part)
                              for part in test.split(500)) / len(test))
    row = Row(
        benchmark=f"VAE epoch incl. data pipeline ({len(x)} images, batch {BATCH})",
        peer="torchvision MNIST + ToTensor + DataLoader, SVI.step",
        unit="s per epoch",
        zoo_s=median(zoo_times),
        peer_s=median(peer_times),
        target=f"≤ {TARGET:.3g}",
        max_ratio=TARGET,
        accuracy=f"test -ELBO after {args.repeats} epochs (+3 warm-up steps): zoo {zoo_loss:.1f}, "
                 f"peer {peer_loss:.1f} nats (info)",
        note=f"DataLoader num_workers={args.workers}",
        zoo_runs=zoo_times,
        peer_runs=peer_times,
    )
    notes = [
        f"data: {source}; lr {lr} for both",
        f"one-off data-set load: zoo tensor {zoo_load:.2f} s, torchvision MNIST dataset {peer_load:.2f} s",
        f"data pipeline alone, one epoch of batches: zoo permutation + slices + bernoulli "
        f"{pipeline['zoo']:.3f} s, DataLoader with per-item ToTensor {pipeline['peer']:.2f} s",
    ]
    return Report(NAME, "", [row], settings={"images": len(x), "workers": args.workers}, notes=notes)


def _zoo_batches(x: torch.Tensor) -> list[torch.Tensor]:
    order = torch.randperm(len(x), device=x.device)
    return [torch.bernoulli(x[order[i:i + BATCH]]) for i in range(0, len(x), BATCH)]


def main(argv: list[str] | None = None) -> Report:
    p = parser("VAE epoch with its data pipeline: zoo vs Pyro-examples style", repeats=3)
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader worker processes of the peer (default 0: no extra cores)")
    args = p.parse_args(argv)
    return run_main(NAME, benchmark, args, argv)


if __name__ == "__main__":
    main()
