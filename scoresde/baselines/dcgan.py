"""DCGAN (Radford, Metz and Chintala, 2016): a convolutional GAN with the non-saturating loss.

The generator maps ``z ~ N(0, I_latent_dim)`` through a linear layer to ``[2w, H/4, W/4]`` and two
stride-2 transposed convolutions (batch norm and ReLU between, ``tanh`` at the end) to images in
``[-1, 1]``. The discriminator has two stride-2 convolutions with leaky ReLU and a linear head
giving one logit; it has no batch norm, so each image is judged on its own. Losses (Goodfellow et
al. 2014, non-saturating form), with ``D`` the logit and ``sigma`` the logistic function:

    L_D = -log sigma(D(x)) - log(1 - sigma(D(G(z)))),      L_G = -log sigma(D(G(z))).

A GAN defines no density, so :meth:`DCGAN.log_prob` and :meth:`DCGAN.bits_per_dim` raise
:class:`~scoresde.errors.OptionError`.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_generator, finite_float, positive_int
from ..errors import OptionError
from ..noise import randn
from ._train import as_model_range, check_image_shape, check_images, param_device_dtype

_NO_LIKELIHOOD = (
    "a GAN has no likelihood; DCGAN defines no density, so it has no log_prob or bits/dim "
    "(compare it by sample quality, or use ConvVAE (an ELBO bound) or RealNVP (exact))"
)


def _generator_net(c: int, h: int, w: int, latent_dim: int, width: int) -> nn.Sequential:
    w2 = 2 * width
    return nn.Sequential(
        nn.Linear(latent_dim, w2 * (h // 4) * (w // 4), bias=False), nn.BatchNorm1d(w2 * (h // 4) * (w // 4)), nn.ReLU(),
        nn.Unflatten(1, (w2, h // 4, w // 4)),
        nn.ConvTranspose2d(w2, width, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),  # H/2
        nn.ConvTranspose2d(width, c, 4, stride=2, padding=1), nn.Tanh(),  # H
    )


def _discriminator_net(c: int, h: int, w: int, width: int) -> nn.Sequential:
    w2 = 2 * width
    return nn.Sequential(
        nn.Conv2d(c, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),  # H/2
        nn.Conv2d(width, w2, 4, stride=2, padding=1), nn.LeakyReLU(0.2),  # H/4
        nn.Flatten(), nn.Linear(w2 * (h // 4) * (w // 4), 1),
    )


def _dcgan_init(module: nn.Module) -> None:
    """Radford et al.'s initialisation: weights ``N(0, 0.02)``, batch-norm gains ``N(1, 0.02)``, zero biases."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGAN(nn.Module):
    """Generator and discriminator for images ``[B, C, H, W]`` in ``[-1, 1]``.

    Args:
        image_shape: ``(C, H, W)``, ``H`` and ``W`` multiples of 4.
        latent_dim: size of the generator's input ``z``.
        width: channels at ``H/2`` (twice that at ``H/4``), in both networks.

    Attributes:
        netG: ``z [B, latent_dim] -> images [B, C, H, W]``.
        netD: ``images [B, C, H, W] -> logits [B, 1]``.
        config: the constructor arguments.
    """

    kind = "dcgan"
    default_lr = 2e-4

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), latent_dim: int = 64, width: int = 64):
        super().__init__()
        c, h, w = check_image_shape(image_shape, multiple=4)
        latent_dim = positive_int(latent_dim, "latent_dim")
        width = positive_int(width, "width")
        self.image_shape, self.latent_dim = (c, h, w), latent_dim
        self.config: Dict[str, Any] = {"image_shape": [c, h, w], "latent_dim": latent_dim, "width": width}
        self.netG = _generator_net(c, h, w, latent_dim, width)
        self.netD = _discriminator_net(c, h, w, width)
        self.apply(_dcgan_init)

    def generate(self, z: Tensor) -> Tensor:
        """``G(z)``: ``z [B, latent_dim] -> [B, C, H, W]`` in ``[-1, 1]`` (differentiable; uses the current mode's batch norm)."""
        check_images(z, (self.latent_dim,), "z")
        return self.netG(z)

    def discriminate(self, x: Tensor) -> Tensor:
        """``D(x)``: logits ``[B]`` that ``x`` ``[B, C, H, W]`` is real."""
        return self.netD(x).squeeze(1)

    def discriminator_loss(self, x_real: Tensor, x_fake: Tensor) -> Tensor:
        """``mean(-log sigma(D(x_real))) + mean(-log(1 - sigma(D(x_fake))))``, a scalar (nats)."""
        return F.softplus(-self.discriminate(x_real)).mean() + F.softplus(self.discriminate(x_fake)).mean()

    def generator_loss(self, x_fake: Tensor) -> Tensor:
        """The non-saturating generator loss ``mean(-log sigma(D(x_fake)))``, a scalar (nats)."""
        return F.softplus(-self.discriminate(x_fake)).mean()

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` images ``[n, C, H, W]`` in ``[-1, 1]`` from ``z ~ N(0, I)`` drawn from ``generator``.

        The generator runs in eval mode (batch norm with its running statistics), so a sample does not
        depend on the others in its batch and nothing is updated; the module's mode is restored.
        """
        n = positive_int(n, "n")
        device, dtype = param_device_dtype(self)
        z = randn((n, self.latent_dim), generator=generator, device=device, dtype=dtype)
        was_training = self.netG.training
        self.netG.eval()
        try:
            with torch.no_grad():
                return self.netG(z)
        finally:
            self.netG.train(was_training)

    def configure_optimizers(self, lr: Optional[float] = None) -> Tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        """``(opt_g, opt_d)``: Adam with ``betas = (0.5, 0.999)`` and learning rate ``lr`` (default 2e-4) for each network."""
        lr = finite_float(self.default_lr if lr is None else lr, "lr", positive=True)
        return (torch.optim.Adam(self.netG.parameters(), lr=lr, betas=(0.5, 0.999)),
                torch.optim.Adam(self.netD.parameters(), lr=lr, betas=(0.5, 0.999)))

    def train_step(
        self, x: Tensor, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, generator: Optional[torch.Generator] = None
    ) -> Dict[str, float]:
        """One discriminator step then one generator step on a real batch ``x`` ``[B, C, H, W]`` (``B >= 2``).

        ``x`` may be floats in ``[-1, 1]`` or integer levels. The same ``z`` (from ``generator``)
        serves both steps; ``G`` is updated against the freshly updated ``D``.

        Returns:
            ``{"loss_d": L_D, "loss_g": L_G}`` (nats, batch means; ``L_D`` before the D step, ``L_G`` before the G step).
        """
        check_images(x, self.image_shape)
        check_generator(generator)
        if x.shape[0] < 2:
            raise OptionError(f"train_step needs a batch of at least 2 images (batch norm), got {x.shape[0]}")
        device, dtype = param_device_dtype(self)
        x = as_model_range(x, dtype).to(device)
        z = randn((x.shape[0], self.latent_dim), generator=generator, device=device, dtype=dtype)
        fake = self.netG(z)
        loss_d = self.discriminator_loss(x, fake.detach())
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        loss_g = self.generator_loss(fake)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        return {"loss_d": float(loss_d.detach()), "loss_g": float(loss_g.detach())}

    def log_prob(self, x: Tensor) -> Tensor:
        """Not available: raises :class:`~scoresde.errors.OptionError` (a GAN has no likelihood)."""
        raise OptionError(_NO_LIKELIHOOD)

    def bits_per_dim(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Not available: raises :class:`~scoresde.errors.OptionError` (a GAN has no likelihood)."""
        raise OptionError(_NO_LIKELIHOOD)


__all__ = ["DCGAN"]
