"""StyleGAN2's losses with stylegan3's interface (docs/contracts.md section 4).

G: non-saturating logistic loss ``softplus(-D(G(z)))`` plus path-length regularisation (Greg).
D: logistic loss ``softplus(D(G(z))) + softplus(-D(x))`` plus lazy R1 on reals (Dreg).
Phases: Gmain, Greg, Gboth, Dmain, Dreg, Dboth; the loop passes ``gain`` = the phase's interval,
which is how lazy regularisation keeps the penalty's expected strength.
"""

import inspect

import numpy as np
import torch
import torch.nn.functional as F

from training import training_stats

PHASES = ("Gmain", "Greg", "Gboth", "Dmain", "Dreg", "Dboth")


def _distributed():
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _blur(img, sigma):
    """Gaussian blur of N,C,H,W images (stylegan3's blur_sigma fade-in; off when sigma <= 0)."""
    radius = int(np.ceil(sigma * 3))
    x = torch.arange(-radius, radius + 1, device=img.device, dtype=img.dtype)
    kernel = torch.exp(-0.5 * (x / sigma).square())
    kernel = kernel / kernel.sum()
    channels = img.shape[1]
    img = F.conv2d(F.pad(img, [radius, radius, 0, 0], mode="reflect"), kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1),
                   groups=channels)
    return F.conv2d(F.pad(img, [0, 0, radius, radius], mode="reflect"), kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1),
                    groups=channels)


def _named_params(fn):
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


class _EmaKeyword:
    """How a network's forward says "update running averages": stylegan3's ``update_emas=True``,
    stylegan2-ada's mapping ``skip_w_avg_update=False``, or not at all."""

    def __init__(self, module):
        params = _named_params(module.forward) if module is not None else set()
        self.style = "update_emas" if "update_emas" in params else "skip" if "skip_w_avg_update" in params else None

    def __call__(self, update_emas):
        if self.style == "update_emas":
            return {"update_emas": update_emas}
        if self.style == "skip":
            return {"skip_w_avg_update": not update_emas}
        return {}


class StyleGAN2Loss:
    """The bundled host's loss. ``G`` needs ``z_dim``, ``mapping(z, c, ...)`` and
    ``synthesis(ws, ...)``; ``D(img, c, ...)`` returns logits. Running averages (w_avg) are
    updated through whichever keyword the networks take (stylegan3's or stylegan2-ada's)."""

    def __init__(self, device, G, D, augment_pipe=None, r1_gamma=10, style_mixing_prob=0.9, pl_weight=2,
                 pl_batch_shrink=2, pl_decay=0.01, pl_no_weight_grad=False, blur_init_sigma=0, blur_fade_kimg=0):
        if r1_gamma < 0 or pl_weight < 0:
            raise ValueError("r1_gamma and pl_weight must be >= 0, got %g and %g" % (r1_gamma, pl_weight))
        if not 0 <= style_mixing_prob <= 1:
            raise ValueError("style_mixing_prob must be in [0, 1], got %g" % style_mixing_prob)
        if int(pl_batch_shrink) < 1:
            raise ValueError("pl_batch_shrink must be an integer >= 1, got %r" % (pl_batch_shrink,))
        self.device = torch.device(device)
        self.G = G
        self.D = D
        self.augment_pipe = augment_pipe
        self.r1_gamma = float(r1_gamma)
        self.style_mixing_prob = float(style_mixing_prob)
        self.pl_weight = float(pl_weight)
        self.pl_batch_shrink = int(pl_batch_shrink)
        self.pl_decay = float(pl_decay)
        # Accepted for config compatibility: autograd.grad w.r.t. ws never builds weight gradients
        # here (no custom conv ops with their own backward), so there is nothing to switch off.
        self.pl_no_weight_grad = bool(pl_no_weight_grad)
        self.blur_init_sigma = float(blur_init_sigma)
        self.blur_fade_kimg = float(blur_fade_kimg)
        self._ema_mapping = _EmaKeyword(getattr(G, "mapping", None))
        self._ema_synthesis = _EmaKeyword(getattr(G, "synthesis", None))
        self._ema_D = _EmaKeyword(D)
        self.pl_mean = torch.zeros([], device=self.device)
        # The running path-length mean is moved once per Greg step by the mean over *all* rounds
        # and processes of that step (stylegan3 moves it per round and per process). So a split of
        # the batch into rounds or processes does not change the result, and resume is exact.
        self._pl_pending = None  # (sum of per-round mean lengths, number of rounds, cur_nimg)

    # ------------------------------------------------------------------ forward passes
    def run_G(self, z, c, update_emas=False):
        ws = self.G.mapping(z, c, **self._ema_mapping(update_emas))
        if self.style_mixing_prob > 0:
            with torch.autograd.profiler.record_function("style_mixing"):
                num_ws = ws.shape[1]
                cutoff = torch.randint(1, num_ws, [], device=ws.device) if num_ws > 1 else torch.ones([], dtype=torch.int64, device=ws.device)
                mix = torch.rand([], device=ws.device) < self.style_mixing_prob
                cutoff = torch.where(mix, cutoff, torch.full_like(cutoff, num_ws))
                ws_mix = self.G.mapping(torch.randn_like(z), c, **self._ema_mapping(False))
                layer = torch.arange(num_ws, device=ws.device).view(1, -1, 1)
                ws = torch.where(layer < cutoff, ws, ws_mix)
        img = self.G.synthesis(ws, **self._ema_synthesis(update_emas))
        return img, ws

    def run_D(self, img, c, blur_sigma=0, update_emas=False):
        if blur_sigma > 0:
            with torch.autograd.profiler.record_function("blur"):
                img = _blur(img, blur_sigma)
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.D(img, c, **self._ema_D(update_emas))

    # ------------------------------------------------------------------ path-length mean
    def _flush_pl_mean(self):
        """Apply the pending path-length update (collective when distributed)."""
        if self._pl_pending is None:
            return
        total, rounds, _ = self._pl_pending
        self._pl_pending = None
        stacked = torch.stack([total, torch.as_tensor(float(rounds), device=total.device, dtype=total.dtype)])
        if _distributed():
            torch.distributed.all_reduce(stacked)
        batch_mean = stacked[0] / stacked[1]
        self.pl_mean.copy_(self.pl_mean.lerp(batch_mean, self.pl_decay).detach())

    def state_dict(self):
        """Loss state needed for exact resume (collective when distributed: call on every rank)."""
        self._flush_pl_mean()
        return {"pl_mean": self.pl_mean.detach().cpu().clone()}

    def load_state_dict(self, state):
        self._pl_pending = None
        self.pl_mean.copy_(torch.as_tensor(state["pl_mean"]).to(self.pl_mean.device))

    # ------------------------------------------------------------------ the phases
    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
        if phase not in PHASES:
            raise ValueError("unknown phase %r; expected one of %s" % (phase, ", ".join(PHASES)))
        if self.pl_weight == 0:
            phase = {"Greg": "none", "Gboth": "Gmain"}.get(phase, phase)
        if self.r1_gamma == 0:
            phase = {"Dreg": "none", "Dboth": "Dmain"}.get(phase, phase)
        fade = max(1 - cur_nimg / (self.blur_fade_kimg * 1e3), 0) if self.blur_fade_kimg > 0 else 0
        blur_sigma = self.blur_init_sigma * fade

        if phase in ("Gmain", "Gboth"):
            with torch.autograd.profiler.record_function("Gmain_forward"):
                gen_img, _ = self.run_G(gen_z, gen_c)
                gen_logits = self.run_D(gen_img, gen_c, blur_sigma=blur_sigma)
                training_stats.report("Loss/scores/fake", gen_logits)
                training_stats.report("Loss/signs/fake", gen_logits.sign())
                loss_Gmain = F.softplus(-gen_logits)
                training_stats.report("Loss/G/loss", loss_Gmain)
            with torch.autograd.profiler.record_function("Gmain_backward"):
                loss_Gmain.mean().mul(gain).backward()

        if phase in ("Greg", "Gboth"):
            self._accumulate_path_length(gen_z, gen_c, gain, cur_nimg)

        loss_Dgen = 0
        if phase in ("Dmain", "Dboth"):
            with torch.autograd.profiler.record_function("Dgen_forward"):
                gen_img, _ = self.run_G(gen_z, gen_c, update_emas=True)
                gen_logits = self.run_D(gen_img, gen_c, blur_sigma=blur_sigma, update_emas=True)
                training_stats.report("Loss/scores/fake", gen_logits)
                training_stats.report("Loss/signs/fake", gen_logits.sign())
                loss_Dgen = F.softplus(gen_logits)
            with torch.autograd.profiler.record_function("Dgen_backward"):
                loss_Dgen.mean().mul(gain).backward()

        if phase in ("Dmain", "Dreg", "Dboth"):
            name = {"Dmain": "Dreal", "Dreg": "Dr1", "Dboth": "Dreal_Dr1"}[phase]
            with torch.autograd.profiler.record_function(name + "_forward"):
                real_img_tmp = real_img.detach().requires_grad_(phase in ("Dreg", "Dboth"))
                real_logits = self.run_D(real_img_tmp, real_c, blur_sigma=blur_sigma)
                training_stats.report("Loss/scores/real", real_logits)
                training_stats.report("Loss/signs/real", real_logits.sign())
                loss_Dreal = 0
                if phase in ("Dmain", "Dboth"):
                    loss_Dreal = F.softplus(-real_logits)
                    training_stats.report("Loss/D/loss", loss_Dgen + loss_Dreal)
                loss_Dr1 = 0
                if phase in ("Dreg", "Dboth"):
                    with torch.autograd.profiler.record_function("r1_grads"):
                        r1_grads, = torch.autograd.grad(outputs=[real_logits.sum()], inputs=[real_img_tmp],
                                                        create_graph=True, only_inputs=True)
                    r1_penalty = r1_grads.square().sum([1, 2, 3])
                    loss_Dr1 = r1_penalty * (self.r1_gamma / 2)
                    training_stats.report("Loss/r1_penalty", r1_penalty)
                    training_stats.report("Loss/D/reg", loss_Dr1)
            with torch.autograd.profiler.record_function(name + "_backward"):
                (loss_Dreal + loss_Dr1).mean().mul(gain).backward()

    def _accumulate_path_length(self, gen_z, gen_c, gain, cur_nimg):
        # A new Greg step starts when cur_nimg changes: fold the previous step into pl_mean first.
        if self._pl_pending is not None and self._pl_pending[2] != cur_nimg:
            self._flush_pl_mean()
        with torch.autograd.profiler.record_function("Gpl_forward"):
            batch_size = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
            gen_img, gen_ws = self.run_G(gen_z[:batch_size], gen_c[:batch_size])
            pl_noise = torch.randn_like(gen_img) / np.sqrt(gen_img.shape[2] * gen_img.shape[3])
            pl_grads, = torch.autograd.grad(outputs=[(gen_img * pl_noise).sum()], inputs=[gen_ws],
                                            create_graph=True, only_inputs=True)
            pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()
            lengths_mean = pl_lengths.mean().detach()
            if self._pl_pending is None:
                self._pl_pending = (lengths_mean, 1, cur_nimg)
            else:
                self._pl_pending = (self._pl_pending[0] + lengths_mean, self._pl_pending[1] + 1, cur_nimg)
            pl_penalty = (pl_lengths - self.pl_mean).square()
            training_stats.report("Loss/pl_penalty", pl_penalty)
            loss_Gpl = pl_penalty * self.pl_weight
            training_stats.report("Loss/G/reg", loss_Gpl)
        with torch.autograd.profiler.record_function("Gpl_backward"):
            loss_Gpl.mean().mul(gain).backward()
