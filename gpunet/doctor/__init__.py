"""gn.doctor: names the classic training mistakes in one line, before and during training.

    findings = gn.doctor.check_model(model, (x, y), loss, optimizer)      # static, one batch
    findings = gn.doctor.preflight(model, train_set, loss, opt, trainer)  # static, from the data
    trainer = gn.Trainer(..., callbacks=[gn.doctor.LiveDoctor()])          # live, during fit
    gn.doctor.render(findings)                                             # rich table

Every Finding has a severity, a stable code (findings.CODES), a message, evidence
and a one-line fix. docs/doctor.md shows each code with real output.
"""
from .findings import CODES, SEVERITIES, Finding, code, has_problems, ignored, render, worst  # noqa: F401
from .live import DivergenceError, LiveDoctor  # noqa: F401
from .preflight import check_model, preflight  # noqa: F401
from .probe import OneHotLoss  # noqa: F401
from .theory import binary_entropy, entropy, priors_losses  # noqa: F401
