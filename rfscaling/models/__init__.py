"""Models of the testbed, by name (``model.kind``): each module registers a model in
:data:`MODELS` that turns a data set into a :class:`Problem` in kernel eigen-coordinates (the
eigenfeature student, the random-feature network with a frozen random first layer)."""

from rfscaling.models.problem import (
    MODELS,
    Model,
    Problem,
    ProblemSpec,
    check_problem,
    make_problem,
    random_streams,
)

__all__ = ["MODELS", "Model", "Problem", "ProblemSpec", "check_problem", "make_problem", "random_streams"]
