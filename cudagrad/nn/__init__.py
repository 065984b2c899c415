"""Neural-network building blocks: Module, layers and cg.nn.functional."""
from cudagrad.nn import functional
from cudagrad.nn.layers import Flatten, Linear, ReLU, Sequential, Sigmoid, Tanh
from cudagrad.nn.module import Module
from cudagrad.nn.parallel import DataParallel

__all__ = ["Module", "Linear", "ReLU", "Tanh", "Sigmoid", "Flatten", "Sequential", "DataParallel",
           "functional"]
