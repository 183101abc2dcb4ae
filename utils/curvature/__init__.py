"""The instrument: Adam's state, Hessian-vector products, the preconditioned Hessian as an
operator, its top eigenpair (the engine, warm-started and certified) and the per-step tracker.

``adam_state`` (m, v, v̂, D, c_t read from a real ``torch.optim.Adam``), ``hvp`` (products on a
fixed batch), ``preconditioned`` (Ĥ = c D H in symmetric form, λ_grad, alignment, solvers),
``engine`` (the warm-started block solver and its certificate), ``tracker`` (what to measure at
each step). May import: :mod:`utils.validation` only. The bottom layer.
"""
