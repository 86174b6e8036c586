"""Leaky-integrator units (deck 000, "leaky units"; Jaeger 2007, Bengio et al. 2013).

    h̃_t = tanh(W_xh x_t + b_xh + W_hh h_{t-1} + b_hh)
    h_t = (1 - α) ⊙ h_{t-1} + α ⊙ h̃_t

α ∈ (0, 1] per unit sets a time constant of about 1/α steps: small α keeps a slowly moving
average of the past, α = 1 is the Elman RNN. α is fixed (`alpha=0.5` or a tensor of H values)
or learned per unit (`learn_alpha=True`, parametrised as α = σ(a) so it stays in (0, 1); a given α of 1
starts there at 1 - 1e-4, where the logit a is finite). σ takes a held in [log tiny, logit(1 - eps)] of its
dtype, the gradient passing straight through: α never rounds to 1 or 0 (float32: 1 - 1.2e-7 at most, 1.2e-38 at
least), and a unit a large step drives past either end still gets a gradient (σ's at that end, not 0).

Backward:
    dh̃ = dh_t ⊙ α      da = dh̃ ⊙ (1 - h̃²)       dα = Σ_b dh_t ⊙ (h̃_t - h_{t-1})
    dh_{t-1} = dh_t ⊙ (1 - α) + da W_hh
"""

import math

import torch
from torch import nn

from rnnkit.cells._base import Cell, linear, plain_ops_only, recurrent_weights
from rnnkit.errors import RnnkitError, said, switch


def _zero_in(dtype, a, where=""):
    """The one line of an α in (0, 1] that is 0 in the cell's dtype (units that never move)."""
    return (f"leaky alpha must lie in (0, 1] and be above 0 in {dtype}, the cell's dtype; got {a:g}{where}, which is "
            f"0 there (units that never move): give a larger alpha or make the cell in a wider dtype")  # fmt: skip


def leaky_step(xw_t, state, P):
    (h_prev,) = state
    W_hh, b_hh, alpha = P
    hc = torch.tanh(xw_t + linear(h_prev, W_hh, b_hh))
    h_t = h_prev + alpha * (hc - h_prev)
    return (h_t,), (h_prev,), (hc, h_prev, alpha)


def leaky_step_backward(dstate, cache, P):
    (dh_t,) = dstate
    hc, h_prev, alpha = cache
    W_hh = P[0]
    da = dh_t * alpha * (1 - hc * hc)
    dalpha = (dh_t * (hc - h_prev)).sum(0)
    dh_prev = dh_t * (1 - alpha) + da @ W_hh
    return da, (dh_prev,), (da,), (dalpha,)


def learned_alpha(a):
    """α = σ(a) of the logit a, with a held in [logit(tiny), logit(1 - eps)] of σ's dtype (float32 for the half
    types) where the gradient still flows as if it were not (straight through): past about a = 16.6 in float32 (36.7
    in float64) σ(a) rounds to 1 and σ's backward, α (1 - α), to 0, and below -104 σ(a) is 0. A unit taken there
    by a large step (SGD at lr 1e4, a few steps) kept α = 1 with a gradient of exactly 0, frozen for good."""
    half = a.dtype in (torch.float16, torch.bfloat16)
    wide = a.float() if half else a
    lo, hi = _held(wide.dtype)
    # (traced by torch.jit.trace: one graph, with and without grad mode, whose check reruns it under no_grad)
    if (torch.is_grad_enabled() and wide.requires_grad) or plain_ops_only() or torch.jit.is_tracing():
        # (the gradient as of a itself, 0 where a is inf or NaN: inf - inf would make α NaN)
        kept = wide.detach()
        wide = kept.clamp(lo, hi) + (wide - kept).nan_to_num(0.0, 0.0, 0.0)
    else:  # (no gradient: the same α in two ops, a one-step call's)
        wide = wide.clamp(lo, hi)
    alpha = torch.sigmoid(wide)
    return alpha.to(a.dtype) if half else alpha


_HELD = {}


def _held(dtype):
    """learned_alpha's [logit(tiny), logit(1 - eps)] of dtype, computed once."""
    if dtype not in _HELD:
        fi = torch.finfo(dtype)
        _HELD[dtype] = (math.log(fi.tiny), math.log1p(-fi.eps) - math.log(fi.eps))
    return _HELD[dtype]


class Leaky(Cell):
    """Leaky-integrator cell. Shapes: x_t (B, D), h_t (B, H); α (H,)."""

    gates = 1
    REC_PARAMS = ("W_hh", "b_hh", "alpha")
    EXTRAS = ("alpha",)
    step = staticmethod(leaky_step)
    step_backward = staticmethod(leaky_step_backward)

    def __init__(
        self,
        input_size,
        hidden_size,
        bias=True,
        alpha=0.5,
        learn_alpha: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__(input_size, hidden_size, bias)
        H = hidden_size
        recurrent_weights(self, ("W_hh", (H, H)), ("b_hh", (H,) if bias else None))
        # said in one line: expand's own error named neither alpha nor H (a string: "new(): invalid data type")
        try:
            # (detached: a tensor that requires grad stayed a node of the caller's graph, which deepcopy refused)
            # (in float64: made in the default dtype and converted, a float64 layer's α = 0.1 was 0.10000000149)
            a0 = torch.as_tensor(alpha, dtype=torch.float64, device="cpu").detach()
        except (TypeError, ValueError, RuntimeError):
            a0 = None
        except OverflowError:
            # (a Python int past float's range, 10**400: torch's "int too large to convert")
            raise ValueError(f"leaky alpha must lie in (0, 1], got {said(alpha)}") from None
        # (a tensor made under `with torch.device("meta")` has no values to copy: it was said to be of the wrong shape,
        # "must be a number or 4 values, ..., got tensor(..., device='meta', size=(4,))")
        if isinstance(alpha, torch.Tensor) and alpha.is_meta:
            raise ValueError(f"leaky alpha is a tensor on the meta device (made under `with torch.device('meta')`?), "
                             f"which holds no values; give a number, a list of {H} or a tensor made on the CPU "
                             f"(torch.full(({H},), a, device='cpu'))")  # fmt: skip
        # (True ran as α = 1, a plain tanh RNN, where forget_bias=True is refused)
        if isinstance(alpha, bool) or (isinstance(alpha, torch.Tensor) and alpha.dtype == torch.bool):
            a0 = None
        if a0 is None or a0.shape not in ((), (1,), (H,)):
            got = f"shape {tuple(a0.shape)}" if a0 is not None else repr(alpha)
            raise ValueError(
                f"leaky alpha must be a number or {H} values, one per unit (hidden_size = {H}), got {got}"
            )
        a0 = a0.expand(H).clone()
        made = a0.to(torch.get_default_dtype())
        # (an α that is 0 in the dtype the cell is made in, dtype= or the default: refused too; the default's check
        # let alpha=1e-8 with dtype=torch.float16 run at α = 0. A dtype that is no floating dtype: _place says so)
        given = dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else made.dtype
        if not bool(((a0 > 0) & (a0 <= 1)).all()):
            raise ValueError(f"leaky alpha must lie in (0, 1], got {said(alpha)}")
        if not bool((a0.to(given) > 0).all()):  # (it said "must lie in (0, 1], got 1e-08", which it does)
            raise ValueError(_zero_in(given, a0[a0.to(given) == 0].min().item()))
        # what reset_parameters() puts α back to, kept on the CPU out of the buffers: to_empty() (after building on
        # the meta device) keeps no buffer's values, and α was whatever the new memory held
        self._alpha_given = a0.clone()
        a0 = made.to(
            torch.get_default_device()
        )  # (checked on the CPU: also under `with torch.device("meta")`)
        # (learn_alpha="False" from a config file was taken for True: α learned, in silence)
        switch("leaky learn_alpha", learn_alpha)
        learn_alpha = bool(learn_alpha)
        # (learned, α = σ(a) is 0 in the dtype below about 1e-38 in float32: a unit frozen, its gradient 0)
        learned = torch.sigmoid(torch.logit(self._alpha_given.to(given).clamp(max=1 - 1e-4)))
        if learn_alpha and not bool((learned > 0).all()):
            raise ValueError(f"leaky alpha must lie in (0, 1] and, learned as σ(a), be above 0 in {given}; "
                             f"got {said(alpha)}")  # fmt: skip
        self.learn_alpha = learn_alpha
        if learn_alpha:  # α = σ(a): start from the given α
            self.alpha_logit = nn.Parameter(torch.logit(a0.clamp(max=1 - 1e-4)))
        else:
            self.register_buffer("alpha_fixed", a0)
        self._place(device, dtype)
        self.reset_parameters()  # (last, once α exists: a subclass's reset_parameters may draw it)

    def reset_parameters(self):
        """The weights drawn as Cell draws them, and α back to the alpha given (no draw): a learned one kept the
        value training had taken it to."""
        super().reset_parameters()
        a, pickled = self.__dict__.get("_alpha_given"), self._buffers.get("alpha_logit_init")
        with torch.no_grad():
            if (
                a is None and pickled is not None
            ):  # a cell pickled before kept a learned α's start in a buffer
                self.alpha_logit.copy_(pickled)
            elif a is not None and self.learn_alpha:
                self.alpha_logit.copy_(torch.logit(a.clamp(max=1 - 1e-4)))
            elif a is not None:
                # (a fixed α set by hand as one number, shape () or (1,), which the cell runs: copy_ of the H values
                # failed, "output with shape [] doesn't match the broadcast shape [4]")
                fixed = self.alpha_fixed
                if fixed.shape == a.shape or bool((a == a[0]).all()):
                    fixed.copy_(a if fixed.shape == a.shape else a[0])
                elif isinstance(fixed, nn.Parameter):  # (replaced, an optimizer would step the old one)
                    raise ValueError(f"cell.alpha_fixed has shape {tuple(fixed.shape)}, which can't hold the {a.numel()} "
                                     f"values of the alpha given; give it shape ({a.numel()},) before reset_parameters")  # fmt: skip
                else:
                    self.alpha_fixed = a.to(device=fixed.device, dtype=fixed.dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args):
        """Cell's, refusing a fixed α outside (0, 1] as __init__ does: a state_dict's alpha_fixed of 1.5 or NaN
        (damaged or hand-made) loaded in silence, units that blow up or give NaN from the first step. A fixed α
        loads into a cell learning it (alpha_logit = logit α, clamped as __init__ does) and a learned one into a
        fixed α (σ(alpha_logit)): the keys differed, and strict=False left α at its start in silence."""
        fixed, logit = prefix + "alpha_fixed", prefix + "alpha_logit"
        source = fixed  # (what an error names: the state_dict's own key)
        if (
            not self.learn_alpha
            and fixed not in state_dict
            and isinstance(state_dict.get(logit), torch.Tensor)
        ):
            state_dict[fixed], source = learned_alpha(state_dict.pop(logit).detach()), f"σ({logit})"
        a = state_dict.get(fixed)
        if isinstance(a, torch.Tensor) and not a.is_meta and not a.is_complex():
            like = self._buffers.get("alpha_fixed")
            dtype = like.dtype if like is not None and like.is_floating_point() else torch.float64
            a = a.detach().to(torch.float64)  # (an integer one is copied into the buffer as its values)
            bad = a[~((a > 0) & (a <= 1))]
            if bad.numel():
                raise ValueError(f"leaky alpha must lie in (0, 1], got {bad.flatten()[0].item():g} in the "
                                 f"state_dict's {source}")  # fmt: skip
            if not bool((a.to(dtype) > 0).all()):
                where = f" in the state_dict's {source}"
                raise ValueError(_zero_in(dtype, a[a.to(dtype) == 0].min().item(), where))
        if self.learn_alpha and logit not in state_dict and isinstance(a, torch.Tensor):
            a = state_dict.pop(fixed).detach()
            # (clamped in float64: 1 - 1e-4 is 1 in float16 and bfloat16, and a half α = 1 gave alpha_logit = inf)
            state_dict[logit] = torch.logit(a.double().clamp(max=1 - 1e-4)).to(self.alpha_logit.dtype)
            # (σ(logit α) is 0 in the cell's dtype below about 1e-38 in float32: refused as __init__ refuses it)
            dtype, learned = self.alpha_logit.dtype, state_dict[logit]
            if (
                not a.is_meta
                and not self.alpha_logit.is_meta
                and not bool((learned.to(dtype).sigmoid() > 0).all())
            ):
                raise ValueError(f"leaky alpha must lie in (0, 1] and, learned as σ(a), be above 0 in {dtype}; got "
                                 f"{a.min().item():g} in the state_dict's {fixed}")  # fmt: skip
        super()._load_from_state_dict(state_dict, prefix, *args)

    def _checked_step(self, x_t, state, unbatched):
        """Cell's, and a fixed α held as a layer holds it (Recurrent's _check_weights): its dtype the weights', its
        shape (), (1,) or (H,) and its values in (0, 1]. A cell called on its own ran α = 2 in silence (|h| 1.8), a
        float64 α gave float64 states, and one of another shape failed in a broadcast inside the step. A learned α's
        alpha_logit so too, its shape (H,) as a layer takes it (a float64 one gave float64 states; one of 5 values in
        a cell of 4, "The size of tensor a (5) must match the size of tensor b (4)")."""
        checked = super()._checked_step(x_t, state, unbatched)
        a, W = self.alpha_logit if self.learn_alpha else self.alpha_fixed, self.weight_like()
        # (torch's 'Tensor on device cpu is not on the expected device meta!', naming none)
        if a.device != W.device:
            name = "alpha_logit" if self.learn_alpha else "alpha_fixed"
            raise RnnkitError(f"cell.{name} is on {a.device} but the cell's weights are on {W.device}; move it there "
                              f"(cell.to({str(W.device)!r}) moves it with the rest)")  # fmt: skip
        if self.learn_alpha:
            a, dtype, H = self.alpha_logit, W.dtype, self.hidden_size
            if a.shape != (H,):
                raise RnnkitError(f"cell.alpha_logit has shape {tuple(a.shape)}, but a leaky cell of {H} units "
                                  f"learning α needs ({H},), one per unit; give it a tensor of that shape")  # fmt: skip
            if a.dtype != dtype:
                raise RnnkitError(f"cell.alpha_logit is {a.dtype} but the cell's weights are {dtype}; give it a "
                                  f"tensor of their dtype (or convert the whole cell: cell.to({a.dtype}))")  # fmt: skip
        else:
            from rnnkit.layers.recurrent import _check_alpha  # (rnnkit.layers imports the cells)

            a, dtype = self.alpha_fixed, W.dtype
            if a.dtype != dtype:
                raise RnnkitError(f"cell.alpha_fixed is {a.dtype} but the cell's weights are {dtype}; give it a "
                                  f"tensor of their dtype (or convert the whole cell: cell.to({a.dtype}))")  # fmt: skip
            _check_alpha("cell.alpha_fixed", a, self.hidden_size)
        return checked

    def _apply(self, fn, recurse=True):
        """nn.Module's (.to, .half, .float, ...), refusing a conversion that makes α 0 in the new dtype, as __init__
        refuses such a dtype=: Recurrent('leaky', 3, 4, alpha=1e-8, learn_alpha=True).half() ran at α = 0, units
        frozen with a gradient of 0, in silence. The new dtype is read from fn of an empty tensor; this cell is left
        as it was (modules converted before it stay converted)."""
        learned = self.__dict__.get("learn_alpha", False)
        a = self.__dict__.get("_parameters", {}).get("alpha_logit" if learned else "alpha_fixed")
        if a is None and not learned:
            a = self.__dict__.get("_buffers", {}).get("alpha_fixed")
        if isinstance(a, torch.Tensor) and type(a) in (torch.Tensor, nn.Parameter) and not a.is_meta:
            try:
                dtype = fn(a.detach().new_empty(0)).dtype
            except Exception:  # (a conversion that fails on it fails below, in its own words)
                dtype = a.dtype
            if (
                isinstance(dtype, torch.dtype)
                and dtype != a.dtype
                and dtype.is_floating_point
                and a.is_floating_point()
            ):
                old, new = a.detach(), a.detach().to(dtype)
                if learned:  # σ as the alpha property takes it (in float32 for the half types)
                    old, new = (
                        torch.sigmoid(t.float() if t.element_size() < 4 else t).to(t.dtype)
                        for t in (old, new)
                    )
                bad = (old > 0) & (new == 0)
                if bool(bad.any()):
                    raise ValueError(f"leaky alpha must lie in (0, 1] and be above 0 in {dtype}, the dtype this "
                                     f"converts the cell to; got {old[bad].min().item():g}, which is 0 there (units "
                                     f"that never move); keep the leaky cells in {a.dtype}")  # fmt: skip
                given = self._given_alpha(a.dtype)
                if given is not None and torch.equal(given.to(a.device), a.detach()):
                    # α still the one given: its value in the new dtype, as dtype= makes it (.double() of a float32
                    # layer widened float32's 0.3, α = 0.30000001192, outputs 1.5e-8 off a float64 one)
                    out = super()._apply(fn, recurse)
                    a = self._parameters["alpha_logit"] if learned else self.alpha_fixed
                    with torch.no_grad():
                        a.copy_(self._given_alpha(a.dtype).to(a.device))
                    return out
        return super()._apply(fn, recurse)

    def _given_alpha(self, dtype):
        """The alpha given to __init__ as this cell holds it in dtype (alpha_logit where it learns α), or None."""
        a = self.__dict__.get("_alpha_given")
        if a is None:
            return None
        return (torch.logit(a.clamp(max=1 - 1e-4)) if self.learn_alpha else a).to(dtype)

    def extra_repr(self):
        a, given = (None if self.learn_alpha else self.alpha_fixed), self.__dict__.get("_alpha_given")
        # the alpha given while α holds it (0.3, not float16's 0.300049; a learned one: where it starts), a meta
        # tensor having no values to show; a fixed α loaded from another cell's state_dict as it is
        if given is not None and (a is None or a.is_meta or torch.equal(given.to(a.dtype), a.cpu())):
            a = given
        if a is not None:  # (a number set by hand, shape (): a[0] failed, and print(model) with it)
            a = a.reshape(-1)
        shown = (
            "" if a is None else f", alpha={a[0].item():g}" if bool((a == a[0]).all()) else ", alpha=per unit"
        )
        return super().extra_repr() + shown + (", learn_alpha=True" if self.learn_alpha else "")

    @property
    def alpha(self):
        """α: the fixed one, or σ(alpha_logit). In float16 and bfloat16 σ is taken in float32: α above 0.9998 (0.998
        in bfloat16) rounds to 1 there, and σ's backward from that output (α (1 - α) = 0) gave alpha_logit no
        gradient, the unit frozen at α = 1. A small learned α (1e-6) still gets gradients that underflow to 0 in
        float16, as any small gradient does there (scale the loss: torch.amp.GradScaler)."""
        if not self.learn_alpha:
            return self.alpha_fixed
        return learned_alpha(self.alpha_logit)
