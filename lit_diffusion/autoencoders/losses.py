"""The first-stage objective of taming-transformers and LDM: L1 + LPIPS reconstruction, a PatchGAN with hinge loss
and an adaptive weight, and a KL or codebook term.

Generator (autoencoder) step, at optimizer step k:

    r = w_pix |x − x̂| + w_p LPIPS(x, x̂)                                  (per pixel; LPIPS broadcast per image)
    KL  (LDM ``LPIPSWithDiscriminator``):  L_rec = Σ (r / e^s + s) / B,  s a learned log-variance (scalar)
                                           L = L_rec + kl_weight · Σ KL(q(z|x) ‖ N(0, I)) / B
    VQ  (taming ``VQLPIPSWithDiscriminator``): L_rec = mean(r),  L = L_rec + codebook_weight · L_codebook
    both, once k ≥ disc_start:            L += λ · disc_factor · (−mean D(x̂)),
                                     λ = disc_weight · ‖∇_last L_rec‖ / (‖∇_last(−mean D(x̂))‖ + 1e-4)

with ∇_last the gradient at the decoder's output convolution (Esser et al. 2021, Eq. 7; clamped to [0, 1e4] and
detached).  Discriminator step (k ≥ disc_start): disc_factor · ½ (mean relu(1 − D(x)) + mean relu(1 + D(x̂)))
(hinge) or the same with softplus (vanilla).  The sums over pixels (KL) and means (VQ) are the normalisations of
the two reference losses, so their published weights (kl_weight 1e-6, codebook_weight 1.0, …) mean what they
mean there.  Differences from the references, on purpose: the log-variance s is trained (LDM declares it a
parameter but leaves it out of its optimizer, so it stays at ``logvar_init``; ``learn_logvar: false`` does the
same), and the codebook loss puts β on the commitment term as in van den Oord et al. (2017)
(``codebook_legacy: true`` gives taming's ``VectorQuantizer2`` default, which LDM's VQ models were trained with).

LPIPS (Zhang et al. 2018) is torchmetrics' implementation: its linear layers ship inside torchmetrics, but its VGG16
backbone is torchvision's ImageNet file ``vgg16-397923af.pth``, which torchvision downloads and loads without
``weights_only``.  Here it is read only from a local file, with ``torch.load(weights_only=True)``:
``loss.lpips_weights=PATH`` or ``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_diffusion.autoencoders.discriminator import NLayerDiscriminator
from lit_diffusion.autoencoders.networks import check_kind
from lit_diffusion.errors import UserError

LPIPS_BACKBONE_FILE = "vgg16-397923af.pth"
LPIPS_BACKBONE_URL = f"https://download.pytorch.org/models/{LPIPS_BACKBONE_FILE}"
ADAPTIVE_WEIGHT_EPS = 1e-4
ADAPTIVE_WEIGHT_MAX = 1e4


# --- GAN losses ----------------------------------------------------------------------------------------
def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """½ (E relu(1 − D(x)) + E relu(1 + D(x̂)))."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def vanilla_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """½ (E softplus(−D(x)) + E softplus(D(x̂))): the non-saturating GAN's discriminator loss."""
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


DISC_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"hinge": hinge_d_loss, "vanilla": vanilla_d_loss}


def generator_adversarial_loss(logits_fake: Tensor) -> Tensor:
    """−E D(x̂) (taming's generator loss for both discriminator losses)."""
    return -logits_fake.mean()


def adaptive_weight(rec_loss: Tensor, g_loss: Tensor, last_layer: Tensor) -> Tensor:
    """‖∇_last L_rec‖ / (‖∇_last L_g‖ + 1e-4), clamped to [0, 1e4], detached (Esser et al. 2021, Eq. 7)."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = torch.linalg.vector_norm(rec_grad) / (torch.linalg.vector_norm(g_grad) + ADAPTIVE_WEIGHT_EPS)
    return weight.clamp(0.0, ADAPTIVE_WEIGHT_MAX).detach()


def codebook_loss(z: Tensor, codes: Tensor, beta: float = 0.25, legacy: bool = False) -> Tensor:
    """‖sg[z] − e‖² + β ‖z − sg[e]‖² (means over elements): the codebook term moves the codes e to the
    encoder's z, the commitment term (weight β) keeps z near its code.  ``legacy``: taming's VectorQuantizer2
    default (and diffusers' VectorQuantizer), β on the codebook term instead."""
    to_codes = torch.mean((codes - z.detach()) ** 2)
    commitment = torch.mean((z - codes.detach()) ** 2)
    return commitment + beta * to_codes if legacy else to_codes + beta * commitment


# --- LPIPS ---------------------------------------------------------------------------------------------
def lpips_backbone_path(path: str | Path | None = None) -> Path:
    """The VGG16 backbone file: ``path`` if given, else torch hub's checkpoint folder; one UserError if absent."""
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    candidate = Path(path).expanduser() if path is not None else hub / LPIPS_BACKBONE_FILE
    if candidate.is_file():
        return candidate
    where = f"model.loss.lpips_weights={path} does not exist" if path is not None else f"{candidate} does not exist"
    raise UserError(
        f"the perceptual loss (model.loss.perceptual_weight > 0) needs LPIPS's VGG16 backbone, torchvision's "
        f"ImageNet weights file {LPIPS_BACKBONE_FILE} (528 MB, {LPIPS_BACKBONE_URL}); {where}. Put the file in "
        f"{hub}/ (torch hub's cache, $TORCH_HOME/hub/checkpoints) or pass model.loss.lpips_weights=PATH, "
        "or train without it: model.loss.perceptual_weight=0"
    )


class LPIPS(nn.Module):
    """LPIPS-VGG distance of images in [-1, 1] (grayscale replicated to RGB): shape (B,), no trainable weights.

    torchmetrics' network (``_LPIPS``, its bundled linear layers ``lpips_models/vgg.pth``) built with a random
    backbone, which is then replaced by the ImageNet VGG16 read from ``backbone`` (safetensors or a torch file
    read with ``weights_only=True``; only its ``features.*`` entries are used).
    """

    def __init__(self, backbone: str | Path):
        super().__init__()
        from torchmetrics.functional.image.lpips import _LPIPS

        self.net = _LPIPS(pretrained=True, net="vgg", pnet_rand=True)
        state = _read_tensors(Path(backbone))
        features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        loaded = 0
        for slice_ in (self.net.net.slice1, self.net.net.slice2, self.net.net.slice3, self.net.net.slice4,
                       self.net.net.slice5):
            for index, layer in slice_.named_children():
                if isinstance(layer, nn.Conv2d):
                    try:
                        layer.weight.data.copy_(features[f"{index}.weight"])
                        layer.bias.data.copy_(features[f"{index}.bias"])
                    except (KeyError, RuntimeError) as err:
                        raise UserError(f"{backbone} is not torchvision's VGG16 ({LPIPS_BACKBONE_FILE}): "
                                        f"features.{index} is missing or has the wrong shape ({err})") from None
                    loaded += 1
        self.eval().requires_grad_(False)
        self.backbone_layers = loaded

    def train(self, mode: bool = True) -> "LPIPS":
        return super().train(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.shape[1] == 1:
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        return self.net(x.float(), y.float()).flatten()


def _read_tensors(path: Path) -> dict[str, Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"{path} could not be read as a weights file ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict):
        raise UserError(f"{path} does not hold a state dict")
    return state


def build_lpips(weights: str | Path | None = None) -> LPIPS:
    """LPIPS-VGG with the backbone from ``weights`` or torch hub's cache (:func:`lpips_backbone_path`)."""
    return LPIPS(lpips_backbone_path(weights))


class SharedModule:
    """Holds a module outside its owner's parameters, state dict and deep copies (the EMA's copy shares it)."""

    def __init__(self) -> None:
        self.module: nn.Module | None = None

    def __deepcopy__(self, memo: dict) -> "SharedModule":
        return self


# --- the objective -------------------------------------------------------------------------------------
class AutoencoderLoss(nn.Module):
    """Reconstruction + regulariser + PatchGAN terms of a first-stage autoencoder (see the module docstring).

    Holds the discriminator (``discriminator``) and the reconstruction log-variance (``logvar``, KL only); the
    LPIPS network is kept out of the state dict and built on first use (or by :meth:`setup_perceptual`).

    Args:
        kind: ``kl`` or ``vq``.
        image_channels: channels of the images (the discriminator's input).
        pixel_weight, perceptual_weight: weights of |x − x̂| and LPIPS(x, x̂) in r.
        lpips_weights: path of the VGG16 backbone file (default: torch hub's cache).
        kl_weight: KL only; weight of the summed KL.
        learn_logvar, logvar_init: KL only; train s or keep it at its initial value (LDM's behaviour).
        codebook_weight, commitment_beta, codebook_legacy: VQ only; see :func:`codebook_loss`.
        disc_start: first optimizer step with the adversarial terms (both steps are skipped before it).
        disc_weight: multiplies the adaptive weight λ.
        disc_factor: multiplies both adversarial terms once active.
        disc_loss: ``hinge`` or ``vanilla``.
        disc_num_layers, disc_ndf: PatchGAN size (:class:`NLayerDiscriminator`).
    """

    def __init__(self, kind: str, image_channels: int, *, pixel_weight: float = 1.0, perceptual_weight: float = 1.0,
                 lpips_weights: str | None = None, kl_weight: float = 1e-6, learn_logvar: bool = True,
                 logvar_init: float = 0.0, codebook_weight: float = 1.0, commitment_beta: float = 0.25,
                 codebook_legacy: bool = False, disc_start: int = 0, disc_weight: float = 0.5,
                 disc_factor: float = 1.0, disc_loss: str = "hinge", disc_num_layers: int = 3, disc_ndf: int = 64):
        super().__init__()
        self.kind = check_kind(kind)
        if disc_loss not in DISC_LOSSES:
            raise UserError(f"model.loss.disc_loss={disc_loss} is not one of {', '.join(DISC_LOSSES)}")
        self.pixel_weight, self.perceptual_weight, self.lpips_weights = pixel_weight, perceptual_weight, lpips_weights
        self.kl_weight, self.learn_logvar = kl_weight, learn_logvar
        self.codebook_weight, self.commitment_beta = codebook_weight, commitment_beta
        self.codebook_legacy = codebook_legacy
        self.disc_start, self.disc_weight, self.disc_factor = disc_start, disc_weight, disc_factor
        self.disc_loss_fn = DISC_LOSSES[disc_loss]
        self.discriminator = NLayerDiscriminator(image_channels, disc_ndf, disc_num_layers)
        if kind == "kl":
            logvar = torch.full((), float(logvar_init))
            if learn_logvar:
                self.logvar = nn.Parameter(logvar)
            else:
                self.register_buffer("logvar", logvar)
        self._lpips = SharedModule()

    # --- parts ---------------------------------------------------------------------------------------
    def setup_perceptual(self) -> None:
        """Build LPIPS now when it is used (a missing backbone file fails here, before any training)."""
        if self.perceptual_weight > 0 and self._lpips.module is None:
            self._lpips.module = build_lpips(self.lpips_weights)

    def perceptual(self, x: Tensor, rec: Tensor) -> Tensor:
        """LPIPS(x, x̂) per image, shape (B,)."""
        self.setup_perceptual()
        module = self._lpips.module
        if module is None:
            raise RuntimeError("perceptual() called with perceptual_weight = 0")
        if next(module.parameters()).device != x.device:
            module.to(x.device)
        return module(x, rec)

    def adversarial_factor(self, step: int) -> float:
        """disc_factor once ``step`` ≥ disc_start, else 0 (taming's ``adopt_weight``)."""
        return self.disc_factor if step >= self.disc_start else 0.0

    def discriminator_active(self, step: int) -> bool:
        return self.adversarial_factor(step) > 0

    # --- terms ---------------------------------------------------------------------------------------
    def reconstruction(self, x: Tensor, rec: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """r per pixel (shape of x) and the logged parts."""
        l1 = (x - rec).abs()
        r = self.pixel_weight * l1
        logs = {"l1": l1.mean().detach()}
        if self.perceptual_weight > 0:
            p = self.perceptual(x.contiguous(), rec.contiguous())
            r = r + self.perceptual_weight * p.view(-1, 1, 1, 1)
            logs["lpips"] = p.mean().detach()
        return r, logs

    def nll(self, r: Tensor) -> Tensor:
        """L_rec: KL Σ (r / e^s + s) / B; VQ mean(r)."""
        if self.kind == "kl":
            return (r / torch.exp(self.logvar) + self.logvar).sum() / r.shape[0]
        return r.mean()

    def generator_loss(self, x: Tensor, rec: Tensor, regularizer: Tensor, step: int,
                       last_layer: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """The autoencoder's loss and its logged parts.  ``regularizer``: the per-image KL (KL) or the codebook
        loss (VQ).  The adversarial term is added once ``step`` ≥ disc_start, which needs ``last_layer``."""
        r, logs = self.reconstruction(x, rec)
        nll = self.nll(r)
        if self.kind == "kl":
            kl = regularizer.sum() / regularizer.shape[0]
            loss = nll + self.kl_weight * kl
            logs |= {"kl_loss": kl.detach(), "logvar": self.logvar.detach()}
        else:
            loss = nll + self.codebook_weight * regularizer.mean()
            logs["codebook_loss"] = regularizer.detach().mean()
        logs |= {"rec_loss": r.mean().detach(), "nll_loss": nll.detach()}
        factor = self.adversarial_factor(step)
        if factor > 0:
            if last_layer is None:
                raise ValueError("the adversarial term needs the decoder's last layer")
            g_loss = generator_adversarial_loss(self.discriminator(rec.contiguous()))
            d_weight = self.disc_weight * adaptive_weight(nll, g_loss, last_layer)
            loss = loss + d_weight * factor * g_loss
            logs |= {"g_loss": g_loss.detach(), "d_weight": d_weight}
        logs["total_loss"] = loss.detach()
        return loss, logs

    def discriminator_loss(self, x: Tensor, rec: Tensor, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        """disc_factor · d_loss(D(x), D(x̂)) on detached inputs (zero before disc_start)."""
        logits_real = self.discriminator(x.detach().contiguous())
        logits_fake = self.discriminator(rec.detach().contiguous())
        loss = self.adversarial_factor(step) * self.disc_loss_fn(logits_real, logits_fake)
        return loss, {"disc_loss": loss.detach(), "logits_real": logits_real.detach().mean(),
                      "logits_fake": logits_fake.detach().mean()}
