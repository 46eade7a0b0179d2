"""Plain ``nn.Module`` classifiers. They know nothing of Hydra or Lightning: each takes
``in_channels``, ``num_classes`` and an activation factory (``act_layer``)."""
from src.models.activations import activation_factory, as_factory, available_activations
from src.models.lenet import LeNet5
from src.models.resnet import ResNet18

__all__ = ["LeNet5", "ResNet18", "activation_factory", "as_factory", "available_activations"]
