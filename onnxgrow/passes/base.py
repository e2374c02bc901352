"""The one shape of a rewrite: a pass maps a model to a `PassResult(model, modified)`, checked before and after.

Modelled on onnx-ir's pass infrastructure, written small for onnx protos: a pass declares whether it changes the
model it is given (`in_place`) or returns a new one, may state what it needs of its input (`requires`) and what it
guarantees of its output (`ensures`), and reports honestly whether it changed anything. What a pass learns on the
way (folded nodes, untied weights, inserted node names, weights whose bytes are produced as they are written) goes
in a typed subclass of `PassResult`, never in an argument the pass mutates.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Generic, TypeVar

import onnx

from ..errors import InternalError, OnnxGrowError


class PreconditionError(OnnxGrowError):
    """A pass was given a model it cannot work on (`requires` failed): the input's fault, exit status 2."""


class PostconditionError(InternalError):
    """A pass produced a model that breaks what it promises (`ensures` failed): a bug in onnxgrow, exit status 3."""


@dataclass
class PassResult:
    """The model a pass returns, and whether it differs from the one it was given."""

    model: onnx.ModelProto
    modified: bool


R = TypeVar("R", bound=PassResult)


class PassBase(ABC, Generic[R]):
    """A rewrite of a model. Subclasses declare `in_place` and implement `call`; `requires`/`ensures` are optional.

    `in_place = True`: the pass changes the model it is given and returns that same object; False: the given
    model is left alone and a new one is returned. `__call__` checks both conditions and the declaration.
    """

    #: True: changes and returns the model it is given; False: returns a new model, the given one untouched
    #: (every pass declares it)
    in_place: bool

    @property
    def name(self) -> str:
        return type(self).__name__

    @abstractmethod
    def call(self, model: onnx.ModelProto) -> R:
        """Do the rewrite (conditions are checked by `__call__`)."""

    def requires(self, model: onnx.ModelProto) -> str | None:
        """Why this pass cannot run on `model` (None: it can)."""
        return None

    def ensures(self, model: onnx.ModelProto) -> str | None:
        """What is wrong with `model`, the pass's output (None: nothing)."""
        return None

    def __call__(self, model: onnx.ModelProto) -> R:
        why = self.requires(model)
        if why is not None:
            raise PreconditionError(f"{self.name}: cannot run on this model: {why}")
        result = self.call(model)
        if self.in_place and result.model is not model:
            raise PostconditionError(f"{self.name}: declared in place but returned a new model")
        if not self.in_place and result.model is model:
            raise PostconditionError(f"{self.name}: declared to return a new model but returned the one it was given")
        why = self.ensures(result.model)
        if why is not None:
            raise PostconditionError(f"{self.name}: its result is wrong: {why}")
        return result


class Sequential(PassBase[PassResult]):
    """Passes run one after the other, each on the model the previous one returned; modified if any changed it.

    In place when every pass is (then the given model is the one returned)."""

    def __init__(self, *passes: PassBase) -> None:
        if not passes:
            raise ValueError("Sequential needs at least one pass")
        self.passes = passes
        self.in_place = all(p.in_place for p in passes)

    @property
    def name(self) -> str:
        return "Sequential(" + ", ".join(p.name for p in self.passes) + ")"

    def call(self, model: onnx.ModelProto) -> PassResult:
        modified = False
        for p in self.passes:
            result = p(model)
            model, modified = result.model, modified or result.modified
        return PassResult(model, modified)
