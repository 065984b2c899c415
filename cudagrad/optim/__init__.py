"""Optimizers. Each step() is one lazy graph: the gradients, the new
parameter values and the new optimizer state realize in one schedule."""
from cudagrad.optim.adam import Adam
from cudagrad.optim.optimizer import Optimizer
from cudagrad.optim.sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam"]
